"""The browser page's Python side: the local server (web.serve) and the headless-Chromium driver (web.browser)."""
