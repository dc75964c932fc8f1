"""The worker role: pop ready attempts, claim them, run them, heartbeat, report."""
