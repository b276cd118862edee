from bot.cli.commands import main

main()
