"""The `tether` command line (Typer, plain help).

Help and output are plain text: Typer's Rich panels split words at 80 columns and draw
boxes into pipes, and loading Rich cost more than a whole `tether kv get`. Setting
TYPER_USE_RICH=1 brings Rich's help back for whoever prefers it.
"""

import os

os.environ.setdefault("TYPER_USE_RICH", "0")
