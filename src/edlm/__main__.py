from edlm.cli import main

raise SystemExit(main())
