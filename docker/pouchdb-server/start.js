#!/usr/bin/env node
// PouchDB Server as a stand-in for Apache CouchDB's image: it listens on 0.0.0.0:5984, keeps its databases and
// its config.json (which backs /_config, admins included) in /opt/couchdb/data, and, like CouchDB's
// entrypoint, makes COUCHDB_USER an admin with COUCHDB_PASSWORD at start, which ends the "admin party".
// It stops when the server stops, and passes SIGTERM and SIGINT on to it.
'use strict';

const { spawn } = require('node:child_process');
const http = require('node:http');

const DATA = process.env.COUCHDB_DATA_DIR || '/opt/couchdb/data';
const PORT = Number(process.env.COUCHDB_PORT || 5984);
const SERVER = '/opt/pouchdb-server/node_modules/.bin/pouchdb-server';

function request(method, path, body, auth) {
  return new Promise((resolve, reject) => {
    const headers = { 'Content-Type': 'application/json' };
    if (auth) headers.Authorization = `Basic ${Buffer.from(auth).toString('base64')}`;
    const req = http.request({ host: '127.0.0.1', port: PORT, method, path, headers, timeout: 5000 }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode));
    });
    req.on('timeout', () => req.destroy(new Error(`${method} ${path} timed out`)));
    req.on('error', reject);
    req.end(body === undefined ? undefined : JSON.stringify(body));
  });
}

async function waitForServer(deadline) {
  while (Date.now() < deadline) {
    try {
      if ((await request('GET', '/')) === 200) return;
    } catch (error) {
      // not listening yet
    }
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
  throw new Error(`PouchDB Server did not answer on 127.0.0.1:${PORT} within 60 s`);
}

async function ensureAdmin(user, password) {
  const path = `/_config/admins/${encodeURIComponent(user)}`;
  // 200 in an admin party (anyone is admin), 401 once an admin exists: then these credentials must work.
  const status = await request('PUT', path, password);
  if (status === 200) {
    console.log(`start: created the admin ${user}`);
  } else if ((await request('GET', '/_session', undefined, `${user}:${password}`)) !== 200) {
    throw new Error(`an admin exists but ${user} cannot log in: COUCHDB_PASSWORD differs from ${DATA}/config.json`);
  }
}

async function main() {
  const args = ['--host', '0.0.0.0', '--port', String(PORT), '--dir', DATA, '--config', `${DATA}/config.json`];
  const server = spawn(SERVER, [...args, ...process.argv.slice(2)], { cwd: DATA, stdio: 'inherit' });
  for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => server.kill(signal));
  server.on('exit', (code, signal) => process.exit(code === null ? 128 + (signal === 'SIGKILL' ? 9 : 15) : code));
  const { COUCHDB_USER: user, COUCHDB_PASSWORD: password } = process.env;
  if (user && password) {
    try {
      await waitForServer(Date.now() + 60000);
      await ensureAdmin(user, password);
    } catch (error) {
      console.error(`start: ${error.message}`);
      server.kill('SIGTERM');
    }
  }
}

main();
