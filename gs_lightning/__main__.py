from gs_lightning.cli import main

main()
