// verify_tls asks Node's `tls` (Node's own OpenSSL build) whether it accepts certificate
// chains, with a real mutual-TLS handshake over loopback for each case (Tether's
// verifier-matrix test runs it).
//
// stdin:  {"cases": [{"name", "chain_pem": "leaf then intermediates", "key_pem", "roots_pem"}]}
// stdout: {"<name>": null when both ends accepted each other, else the first error text}
"use strict";
const tls = require("tls");

const CASE_DEADLINE_MS = 10000; // a handshake takes milliseconds; this only guards against a hang

function handshake(c) {
  return new Promise((resolve) => {
    const identity = { cert: c.chain_pem, key: c.key_pem, ca: c.roots_pem };
    let settled = false;
    let server;
    const finish = (error) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      server.close();
      resolve(error);
    };
    const timer = setTimeout(() => finish("handshake did not finish"), CASE_DEADLINE_MS);
    server = tls.createServer({ ...identity, requestCert: true, rejectUnauthorized: true }, (socket) => {
      socket.end("ok");
    });
    server.on("tlsClientError", (err) => finish(`server: ${err.code || "error"}: ${err.message}`));
    server.listen(0, "127.0.0.1", () => {
      const client = tls.connect({
        ...identity,
        host: "127.0.0.1",
        port: server.address().port,
        rejectUnauthorized: true,
        // Mesh peers are authorised by SPIFFE ID after chain verification, not by host name.
        checkServerIdentity: () => undefined,
      });
      let received = "";
      client.on("data", (chunk) => { received += chunk; });
      client.on("end", () => finish(received === "ok" ? null : "client: connection closed before the server's data"));
      client.on("error", (err) => finish(`client: ${err.code || "error"}: ${err.message}`));
    });
  });
}

async function main() {
  let input = "";
  for await (const chunk of process.stdin) input += chunk;
  const out = {};
  for (const c of JSON.parse(input).cases) {
    out[c.name] = await handshake(c);
  }
  process.stdout.write(JSON.stringify(out) + "\n");
}

main().catch((err) => {
  process.stderr.write(`verify_tls: ${err.stack || err}\n`);
  process.exit(2);
});
