"""The model side: an OpenAI-compatible client for vLLM, and a scripted server for offline tests."""
