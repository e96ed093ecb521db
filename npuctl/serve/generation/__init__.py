"""Text generation behind the OpenAI and Ollama routes: the per-model queue, prompts checked against limits, structured output, log probabilities."""
