"""The `newsletter` command: main.py is the root group and the entry point; the commands live
beside it by what they are about (audience.py, delivery.py)."""
