// Start s3rver (a real S3-compatible HTTP server, filesystem backend) for Stockade's tests.
// Usage: node run.js <data-dir> <port|0> <bucket>...   Prints {"port": N} once listening.
'use strict';

const S3rver = require('s3rver');

const [directory, port, ...buckets] = process.argv.slice(2);
const server = new S3rver({
  address: '127.0.0.1',
  port: Number(port || 0),
  directory,
  silent: true,
  vhostBuckets: false,
  configureBuckets: buckets.map(name => ({ name, configs: [] })),
});
server.run().then(
  addr => process.stdout.write(JSON.stringify({ port: addr.port }) + '\n'),
  err => {
    process.stderr.write(`s3rver failed to start: ${err.stack || err}\n`);
    process.exit(1);
  },
);
for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => server.close(() => process.exit(0)));
}
