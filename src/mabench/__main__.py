from mabench.cli.main import main

raise SystemExit(main())
