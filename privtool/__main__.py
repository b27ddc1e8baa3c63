"""`python -m privtool` == `privtool`."""

from privtool.cli import main

main()
