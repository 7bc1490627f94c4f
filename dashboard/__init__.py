"""The live dashboard: a small local web page over CouchDB and the services' metrics."""
