from sgdsai_cli.cli import main

main()
