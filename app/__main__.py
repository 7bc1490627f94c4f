"""``python -m app COMMAND``: how the embedded stack starts the bridge, the consumer and the supervisor."""

import sys

from app.commands import main

sys.exit(main())
