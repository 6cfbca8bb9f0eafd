from neuro.cli.main import main

raise SystemExit(main())
