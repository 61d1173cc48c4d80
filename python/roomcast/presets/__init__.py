"""Ready-made servers: complete protocols run in Rust, with hooks still available."""

from .chat import chat

__all__ = ["chat"]
