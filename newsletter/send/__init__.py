"""Sending: message bytes, the Sender protocol with SMTP and in-memory implementations, and the
delivery loop that claims, sends and records through the DeliveryStore it declares."""
