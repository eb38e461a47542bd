"""The evidence page behind every card: signed links (tokens), the audit-store adapter, the page model and charts.

The page reads only the audit store (never the EHR); a link is the only credential it takes.
"""
