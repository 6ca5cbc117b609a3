"""The web layer on aiohttp: the local API (R11) and the operator console and customer page (issue 13).

server.WebServer runs both on one listener on the daemon's event loop; api.py holds the API's
routes, console.py the pages, auth.py logins, sessions and the rate limit, svg.py the charts,
recheck.py the answer to a customer's re-check (on the page and by e-mail).
"""

from .auth import CustomerLogins, CustomersConfigError, load_customers_config, operator_users
from .console import ConsoleParts
from .server import WebServer, build_app

__all__ = ["ConsoleParts", "CustomerLogins", "CustomersConfigError", "WebServer", "build_app",
           "load_customers_config", "operator_users"]
