"""crisiswatch's rule engine: pure domain code.

Never imports faust, aiokafka, asyncio or prometheus_client, never reads the
clock, and does no I/O except reading rule files.  Every decision the product
makes lives here, so ``backtest`` and the live worker give the same answers.
"""
