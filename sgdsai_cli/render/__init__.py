"""Render: results to text, tables, figures and reports. The one place numbers become text
(``format``); tables in ``tables`` and one module per result kind; figures saved by ``figures``."""
