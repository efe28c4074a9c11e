from medcrowd.cli import main

main()
