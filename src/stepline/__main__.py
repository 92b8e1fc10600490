from stepline.cli import main

main()
