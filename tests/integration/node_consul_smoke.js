// A smoke run of the `consul` npm package (a Consul client nobody here wrote), unchanged,
// against the agent at TETHER_URL. Each step prints "ok <step>"; the first failure exits 1.
"use strict";
const assert = require("node:assert/strict");
const Consul = require("consul");

const consul = new Consul({ baseUrl: process.env.TETHER_URL + "/v1" });

const steps = [
  ["agent.self", async () => {
    const self = await consul.agent.self();
    assert.equal(self.Config.Datacenter, "dc1");
    assert.ok(self.Stats.consul.leader_addr);
  }],
  ["agent.service.register and list", async () => {
    await consul.agent.service.register({ name: "web", id: "web-1", port: 8080, tags: ["v1"] });
    const services = await consul.agent.service.list();
    assert.equal(services["web-1"].Port, 8080);
  }],
  ["catalog.service.nodes", async () => {
    const nodes = await consul.catalog.service.nodes("web");
    assert.deepEqual(nodes.map((n) => n.ServiceID), ["web-1"]);
  }],
  ["health.service", async () => {
    const entries = await consul.health.service({ service: "web", passing: true });
    assert.deepEqual(entries.map((e) => e.Service.ID), ["web-1"]);
  }],
  ["kv.set, get and del", async () => {
    assert.equal(await consul.kv.set("smoke/key", "value"), true);
    const pair = await consul.kv.get("smoke/key");
    assert.equal(pair.Value, "value");
    assert.equal(await consul.kv.del("smoke/key"), true);
    assert.equal(await consul.kv.get("smoke/key"), undefined);
  }],
  ["session.create and kv acquire", async () => {
    const { ID } = await consul.session.create({ name: "smoke", lockdelay: "1s" });
    assert.equal(await consul.kv.set("smoke/lock", "me", { acquire: ID }), true);
    const pair = await consul.kv.get("smoke/lock");
    assert.equal(pair.Session, ID);
    await consul.session.destroy(ID);
    assert.equal((await consul.session.info(ID)), undefined);
  }],
  ["transaction.create", async () => {
    const answer = await consul.transaction.create([
      { KV: { Verb: "set", Key: "smoke/txn", Value: Buffer.from("t").toString("base64") } },
    ]);
    assert.equal(answer.Results[0].KV.Key, "smoke/txn");
  }],
  ["event.fire and list", async () => {
    await consul.event.fire("smoke-event", "payload");
    const events = await consul.event.list({ name: "smoke-event" });
    assert.equal(events.length, 1);
    assert.equal(events[0].Payload, "payload");
  }],
  ["status.leader", async () => {
    assert.ok((await consul.status.leader()).includes(":"));
  }],
  ["agent.service.deregister", async () => {
    await consul.agent.service.deregister("web-1");
    assert.deepEqual(Object.keys(await consul.agent.service.list()), []);
  }],
];

(async () => {
  for (const [name, step] of steps) {
    try {
      await step();
    } catch (err) {
      console.error(`not ok ${name}: ${err.message}`);
      process.exit(1);
    }
    console.log(`ok ${name}`);
  }
})();
