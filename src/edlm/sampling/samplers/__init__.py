"""One file per sampler; importing this package imports each of them, and each registers itself
(``edlm.sampling.registry``). A new sampler is a new file here."""

from __future__ import annotations

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
