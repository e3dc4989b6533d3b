// s3rver.js: the local S3 server of tests/s3.sh: @20minutes/s3rver (pinned in package.json),
// which checks SigV4 signatures, on 127.0.0.1. Usage:
//   node --openssl-legacy-provider tests/s3rver.js DIR PORTFILE [BUCKET...]
// It listens on $S3RVER_PORT (deploy/stack.sh), or else on a free port the kernel picks; the
// port is written to PORTFILE once the server listens. The legacy provider is needed: s3rver's
// continuation tokens use DES (see DESIGN.md, S3).
'use strict';
const fs = require('fs');
const S3rver = require('@20minutes/s3rver');

const [directory, portFile, ...buckets] = process.argv.slice(2);
const server = new S3rver({
  address: '127.0.0.1',
  port: Number(process.env.S3RVER_PORT || 0),
  directory,
  silent: true,
  configureBuckets: buckets.map((name) => ({ name })),
});
server.run().then(
  ({ port }) => {
    fs.writeFileSync(portFile + '.tmp', String(port));
    fs.renameSync(portFile + '.tmp', portFile);
  },
  (err) => {
    console.error(`s3rver: ${err.message}`);
    process.exit(1);
  },
);
