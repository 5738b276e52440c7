
from proxy.auth import UserStore
from proxy.server import ProxyServer
from proxy.setup import setup_home

__all__ = [
    "ProxyServer",
    "UserStore",
    "setup_home",
]
