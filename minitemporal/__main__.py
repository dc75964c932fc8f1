from minitemporal.cli import main

main()
