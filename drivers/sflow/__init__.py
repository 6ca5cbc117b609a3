"""sFlow v5: bounded decoder, encoder, sequence tracking and the asyncio UDP collector."""
