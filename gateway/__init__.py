"""The Socket.IO and HTTP gateway."""
