"""Long-running consumers that are not the interview flow (the store job)."""
