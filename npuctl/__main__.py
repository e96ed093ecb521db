from npuctl.cli import main

main()
