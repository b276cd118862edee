"""Channel adapters: each turns inbound traffic into events and renders outbound prompts."""
