"""Redis, one class per domain: each is the only code that touches its keys (built in
`app.keys`). `app.store.Store` holds the connection and one of each."""
