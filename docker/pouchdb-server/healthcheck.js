#!/usr/bin/env node
// Exit 0 when PouchDB Server answers GET / on its port (it has no /_up, unlike Apache CouchDB).
'use strict';

const http = require('node:http');

const port = Number(process.env.COUCHDB_PORT || 5984);
http
  .get({ host: '127.0.0.1', port, path: '/', timeout: 4000 }, (res) => process.exit(res.statusCode === 200 ? 0 : 1))
  .on('timeout', () => process.exit(1))
  .on('error', () => process.exit(1));
