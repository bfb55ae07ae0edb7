from mabench.cli import main

raise SystemExit(main())
