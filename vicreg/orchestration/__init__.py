"""Runs as the app and the command line start them: a job in the background (jobs.py), in bounded calls
(chunks.py), under torchrun (launch.py), and the command line's options (cli.py). May import every other
folder of vicreg; none of them imports this one."""
