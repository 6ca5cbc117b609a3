"""Lab switch CLI (IOS/EOS, VRP, Comware): sshd ForceCommand shell that really sets veth ports.

This is only the login entry; the CLI is tests/lab/cli_shell.py (restrictions in
cli_restrictions.py), where the map file format and the test-only faults are described.

Raw mode first, before anything slow: bytes netmiko sends while the kernel tty is still in
cooked mode get echoed twice (once by the kernel, once by us). A script is compiled whole
before its first line runs, so this file stays tiny and the CLI is imported after the tty is
raw, from bytecode cached in __pycache__.
"""

import os
import sys
import termios
import tty

if __name__ == "__main__":
    saved = None
    if os.isatty(0):
        saved = termios.tcgetattr(0)
        tty.setraw(0, termios.TCSANOW)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # -I leaves it off sys.path
    import cli_shell

    cli_shell._SAVED_TTY = saved
    sys.exit(cli_shell.main())
