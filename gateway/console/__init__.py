"""The supervisor / provider web console: server-rendered pages under ``/console/``."""
