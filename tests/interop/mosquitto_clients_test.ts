/**
 * Interoperability with the Eclipse Mosquitto command-line clients
 * (`mosquitto_sub`, `mosquitto_pub`, libmosquitto 2.0) at MQTT 5.0 and 3.1.1.
 *
 * Every process gets `-W` (or a kill timer) so nothing hangs, and is killed
 * and awaited in `finally`. When the binaries are absent the tests are
 * ignored; CI installs them.
 */
import assert from "node:assert/strict";
import { startBroker } from "../helpers/start_broker.ts";
import { connectMqttJs, settle } from "../helpers/mqttjs.ts";

function onPath(name: string): boolean {
  for (const dir of (Deno.env.get("PATH") ?? "/usr/bin").split(":")) {
    try {
      if (Deno.statSync(`${dir}/${name}`).isFile) return true;
    } catch { /* not in this directory */ }
  }
  return false;
}

// stdbuf (coreutils) line-buffers mosquitto_sub's stdout: its -d log lines (SUBACK) are
// otherwise held in the pipe buffer until the next message line flushes them.
const hasMosquitto = onPath("mosquitto_sub") && onPath("mosquitto_pub") && onPath("stdbuf");

type Version = "mqttv5" | "mqttv311";

/** Fields mosquitto_sub prints for each message (see FORMAT). */
interface SubMessage {
  topic: string;
  qos: number;
  retain: boolean;
  payload: string;
  /** `k:v k2:v2` (v5 only; empty otherwise). */
  userProperties: string;
  contentType: string;
  responseTopic: string;
  correlationData: string;
  expiry: string;
}

// One tab-separated line per message, after a marker that debug output (-d) never starts with.
const FORMAT = "MSG\t%t\t%q\t%r\t%p\t%P\t%C\t%R\t%D\t%E";

/** A running `mosquitto_sub` whose stdout is parsed as it arrives. */
class MosquittoSub implements AsyncDisposable {
  readonly child: Deno.ChildProcess;
  readonly lines: string[] = [];
  stderr = "";
  #stdoutDone: Promise<void>;
  #stderrDone: Promise<void>;
  #waiters: (() => void)[] = [];
  #status?: Deno.CommandStatus;
  readonly status: Promise<Deno.CommandStatus>;

  constructor(args: string[]) {
    this.child = new Deno.Command("stdbuf", {
      args: ["-oL", "mosquitto_sub", ...args],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.#stdoutDone = this.#pump(this.child.stdout, (s) => {
      const parts = (this.#partial + s).split("\n");
      this.#partial = parts.pop()!;
      this.lines.push(...parts);
    });
    this.#stderrDone = this.#pump(this.child.stderr, (s) => this.stderr += s);
    this.status = this.child.status.then((st) => {
      this.#status = st;
      this.#wake();
      return st;
    });
  }

  #partial = "";

  async #pump(stream: ReadableStream<Uint8Array>, onText: (s: string) => void): Promise<void> {
    const decoder = new TextDecoder();
    for await (const chunk of stream) {
      onText(decoder.decode(chunk, { stream: true }));
      this.#wake();
    }
  }

  #wake(): void {
    const w = this.#waiters;
    this.#waiters = [];
    for (const f of w) f();
  }

  /** Parsed message lines so far. */
  get messages(): SubMessage[] {
    return this.lines.filter((l) => l.startsWith("MSG\t")).map((l) => {
      const [, topic, qos, retain, payload, up, ct, rt, cd, exp] = l.split("\t");
      return {
        topic,
        qos: Number(qos),
        retain: retain === "1",
        payload,
        userProperties: up,
        contentType: ct,
        responseTopic: rt,
        correlationData: cd,
        expiry: exp,
      };
    });
  }

  async until(predicate: () => boolean, what: string, timeoutMs = 3_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!predicate()) {
      const left = deadline - Date.now();
      if (left <= 0 || this.#status !== undefined) {
        if (predicate()) return;
        throw new Error(
          `mosquitto_sub: no ${what} (exit ${this.#status?.code}); stdout:\n${
            this.lines.join("\n")
          }\nstderr:\n${this.stderr}`,
        );
      }
      let timer: ReturnType<typeof setTimeout> | undefined;
      await new Promise<void>((resolve) => {
        timer = setTimeout(resolve, left);
        this.#waiters.push(resolve);
      });
      clearTimeout(timer);
    }
  }

  /** Waits for the SUBACK (needs `-d`), so later publishes are sure to match. */
  subscribed(): Promise<void> {
    return this.until(() => this.lines.some((l) => l.includes("received SUBACK")), "SUBACK");
  }

  /** Waits for the process to exit on its own (bounded by its -W). */
  async exited(): Promise<Deno.CommandStatus> {
    const st = await this.status;
    await this.#stdoutDone;
    await this.#stderrDone;
    return st;
  }

  /** Kills (if still running) and reaps the process. */
  async kill(signal: Deno.Signal = "SIGKILL"): Promise<void> {
    if (this.#status === undefined) {
      try {
        this.child.kill(signal);
      } catch { /* already exited */ }
    }
    await this.exited();
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.kill();
  }
}

function subArgs(port: number, version: Version, extra: string[]): string[] {
  return ["-V", version, "-h", "127.0.0.1", "-p", String(port), "-d", "-F", FORMAT, ...extra];
}

/** Runs mosquitto_pub to completion (killed after 3 s); returns its exit code and stderr. */
async function mosquittoPub(
  port: number,
  version: Version,
  args: string[],
): Promise<{ code: number; stderr: string }> {
  const child = new Deno.Command("mosquitto_pub", {
    args: ["-V", version, "-h", "127.0.0.1", "-p", String(port), ...args],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const timer = setTimeout(() => {
    try {
      child.kill("SIGKILL");
    } catch { /* exited */ }
  }, 3_000);
  try {
    const [status, stderr] = await Promise.all([
      child.status,
      new Response(child.stderr).text(),
    ]);
    return { code: status.code, stderr };
  } finally {
    clearTimeout(timer);
  }
}

async function pubOk(port: number, version: Version, args: string[]): Promise<void> {
  const r = await mosquittoPub(port, version, args);
  assert.equal(r.code, 0, `mosquitto_pub ${args.join(" ")} failed: ${r.stderr}`);
}

for (const version of ["mqttv5", "mqttv311"] as const) {
  Deno.test({
    name:
      `mosquitto_sub/pub ${version}: messages at QoS 0/1/2 arrive once, at min(publish QoS, granted QoS), in order`,
    ignore: !hasMosquitto,
    async fn() {
      await using b = await startBroker();
      await using sub = new MosquittoSub(
        subArgs(b.port, version, ["-t", "m/#", "-q", "1", "-C", "5", "-W", "4"]),
      );
      await sub.subscribed();
      await pubOk(b.port, version, ["-t", "m/zero", "-m", "p0", "-q", "0"]);
      await pubOk(b.port, version, ["-t", "m/one", "-m", "p1", "-q", "1"]);
      await pubOk(b.port, version, ["-t", "m/two", "-m", "p2", "-q", "2"]);
      await pubOk(b.port, version, ["-t", "m/two", "-m", "payload with spaces", "-q", "2"]);
      // A last message: any duplicate of the ones before would arrive ahead of it.
      await pubOk(b.port, version, ["-t", "m/end", "-m", "end", "-q", "1"]);
      const st = await sub.exited();
      assert.equal(st.code, 0, sub.stderr);
      assert.deepEqual(sub.messages.map((m) => [m.topic, m.qos, m.retain, m.payload]), [
        ["m/zero", 0, false, "p0"],
        ["m/one", 1, false, "p1"],
        ["m/two", 1, false, "p2"],
        ["m/two", 1, false, "payload with spaces"],
        ["m/end", 1, false, "end"],
      ]);
      assert.equal(b.broker.metrics.messagesReceived, 5);
    },
  });

  Deno.test({
    name:
      `mosquitto_sub ${version} at QoS 2 completes the QoS 2 exchange with the broker (PUBREC/PUBREL/PUBCOMP)`,
    ignore: !hasMosquitto,
    async fn() {
      await using b = await startBroker();
      await using sub = new MosquittoSub(
        subArgs(b.port, version, ["-t", "e/2", "-q", "2", "-C", "1", "-W", "4"]),
      );
      await sub.subscribed();
      await pubOk(b.port, version, ["-t", "e/2", "-m", "exactly-once", "-q", "2"]);
      const st = await sub.exited();
      assert.equal(st.code, 0, sub.stderr);
      assert.deepEqual(sub.messages.map((m) => [m.topic, m.qos, m.payload]), [[
        "e/2",
        2,
        "exactly-once",
      ]]);
      // The subscriber's debug log shows the whole exchange, PUBREL from the broker included.
      const log = sub.lines.join("\n");
      assert.match(log, /received PUBLISH \(d0, q2, r0, m\d+, 'e\/2'/);
      assert.match(log, /sending PUBREC/);
      assert.match(log, /received PUBREL/);
      assert.match(log, /sending PUBCOMP/);
    },
  });

  Deno.test({
    name:
      `mosquitto_pub -r ${version}: the retained message reaches a later mosquitto_sub with RETAIN=1; -r -n deletes it`,
    ignore: !hasMosquitto,
    async fn() {
      await using b = await startBroker();
      await pubOk(b.port, version, ["-t", "r/state", "-m", "kept", "-q", "1", "-r"]);
      {
        await using sub = new MosquittoSub(
          subArgs(b.port, version, ["-t", "r/#", "-q", "1", "-C", "1", "-W", "3"]),
        );
        const st = await sub.exited();
        assert.equal(st.code, 0, sub.stderr);
        assert.deepEqual(sub.messages.map((m) => [m.topic, m.qos, m.retain, m.payload]), [
          ["r/state", 1, true, "kept"],
        ]);
      }
      // An empty retained message deletes it [MQTT-3.3.1-6].
      await pubOk(b.port, version, ["-t", "r/state", "-n", "-r", "-q", "1"]);
      {
        await using sub = new MosquittoSub(
          subArgs(b.port, version, ["-t", "r/#", "-q", "1", "-C", "1", "-W", "3"]),
        );
        await sub.subscribed();
        // Retained messages follow the SUBACK at once, so the first message must be this live one.
        await pubOk(b.port, version, ["-t", "r/live", "-m", "marker", "-q", "1"]);
        const st = await sub.exited();
        assert.equal(st.code, 0, sub.stderr);
        assert.deepEqual(sub.messages.map((m) => [m.topic, m.retain, m.payload]), [
          ["r/live", false, "marker"],
        ]);
      }
    },
  });

  Deno.test({
    name:
      `mosquitto_sub ${version} --will-topic: the Will is published when the process is killed, not after a normal exit`,
    ignore: !hasMosquitto,
    async fn() {
      await using b = await startBroker();
      await using watcher = new MosquittoSub(
        subArgs(b.port, version, ["-t", "will/#", "-q", "1", "-C", "1", "-W", "4"]),
      );
      await watcher.subscribed();
      const willArgs = (name: string) => ["--will-topic", `will/${name}`, "--will-payload", name];
      // A client that ends normally (DISCONNECT 0x00 after -C 1) does not leave its Will [MQTT-3.14.4-3].
      {
        await using polite = new MosquittoSub(
          subArgs(b.port, version, [
            "-t",
            "poke",
            "-C",
            "1",
            "-W",
            "3",
            "--will-qos",
            "1",
            ...willArgs("polite"),
          ]),
        );
        await polite.subscribed();
        await pubOk(b.port, version, ["-t", "poke", "-m", "x"]);
        assert.equal((await polite.exited()).code, 0, polite.stderr);
      }
      {
        await using doomed = new MosquittoSub(
          subArgs(b.port, version, [
            "-t",
            "nothing",
            "-W",
            "4",
            "--will-qos",
            "1",
            "--will-retain",
            ...willArgs("doomed"),
          ]),
        );
        await doomed.subscribed();
        await doomed.kill("SIGKILL"); // no DISCONNECT: a network failure to the broker
      }
      assert.equal((await watcher.exited()).code, 0, watcher.stderr);
      assert.deepEqual(watcher.messages.map((m) => [m.topic, m.qos, m.payload]), [
        ["will/doomed", 1, "doomed"],
      ]);
      assert.equal(b.broker.metrics.willsPublished, 1);
      // --will-retain: the Will was stored as the retained message of its topic.
      assert.deepEqual(
        b.broker.retained.match("will/#", Date.now()).map((m) => m.topic),
        ["will/doomed"],
      );
    },
  });

  Deno.test({
    name:
      `mosquitto_sub -c ${version}: a persistent session gets the QoS 1 message published while it was offline`,
    ignore: !hasMosquitto,
    async fn() {
      await using b = await startBroker();
      const session = ["-c", "-i", `durable-${version}`, "-t", "offline/#", "-q", "1"];
      {
        // -E: exit (with DISCONNECT) as soon as the subscription is acknowledged.
        await using first = new MosquittoSub(subArgs(b.port, version, [...session, "-E"]));
        assert.equal((await first.exited()).code, 0, first.stderr);
      }
      assert.equal(b.broker.connectedCount, 0);
      await pubOk(b.port, version, ["-t", "offline/a", "-m", "while-away", "-q", "1"]);
      await using second = new MosquittoSub(
        subArgs(b.port, version, [...session, "-C", "1", "-W", "3"]),
      );
      assert.equal((await second.exited()).code, 0, second.stderr);
      assert.deepEqual(second.messages.map((m) => [m.topic, m.qos, m.payload]), [
        ["offline/a", 1, "while-away"],
      ]);
      assert.match(second.lines.join("\n"), /received CONNACK \(0\)/);
    },
  });
}

Deno.test({
  name:
    "mosquitto_pub v5 properties (-D user-property, content-type, response-topic, correlation-data, message-expiry) reach mosquitto_sub v5 unchanged [MQTT-3.3.2-15..18]",
  ignore: !hasMosquitto,
  async fn() {
    await using b = await startBroker();
    await using sub = new MosquittoSub(
      subArgs(b.port, "mqttv5", ["-t", "props/#", "-q", "1", "-C", "1", "-W", "3"]),
    );
    await sub.subscribed();
    await pubOk(b.port, "mqttv5", [
      "-t",
      "props/a",
      "-m",
      "body",
      "-q",
      "1",
      "-D",
      "publish",
      "user-property",
      "site",
      "lab",
      "-D",
      "publish",
      "user-property",
      "site",
      "annex",
      "-D",
      "publish",
      "user-property",
      "owner",
      "ops",
      "-D",
      "publish",
      "content-type",
      "text/plain",
      "-D",
      "publish",
      "response-topic",
      "props/reply",
      "-D",
      "publish",
      "correlation-data",
      "req-17",
      "-D",
      "publish",
      "message-expiry-interval",
      "120",
    ]);
    assert.equal((await sub.exited()).code, 0, sub.stderr);
    assert.equal(sub.messages.length, 1);
    const m = sub.messages[0];
    assert.equal(m.payload, "body");
    // User Properties in order, the repeated name kept [MQTT-3.3.2-18].
    assert.equal(m.userProperties, "site:lab site:annex owner:ops");
    assert.equal(m.contentType, "text/plain");
    assert.equal(m.responseTopic, "props/reply");
    assert.equal(m.correlationData, "req-17");
    assert.ok(m.expiry === "120" || m.expiry === "119", `expiry ${m.expiry}`);
  },
});

Deno.test({
  name:
    "mosquitto_pub v5 user properties reach an MQTT.js v5 subscriber in order; a mosquitto_sub 3.1.1 gets the bare payload",
  ignore: !hasMosquitto,
  async fn() {
    await using b = await startBroker();
    await using js = await connectMqttJs(b.port, { clientId: "js" });
    await js.client.subscribeAsync("mix/#", { qos: 1 });
    await using old = new MosquittoSub(
      subArgs(b.port, "mqttv311", ["-t", "mix/#", "-q", "1", "-C", "1", "-W", "3"]),
    );
    await old.subscribed();
    await pubOk(b.port, "mqttv5", [
      "-t",
      "mix/x",
      "-m",
      "hello",
      "-q",
      "1",
      "-D",
      "publish",
      "user-property",
      "a",
      "1",
      "-D",
      "publish",
      "user-property",
      "b",
      "2",
      "-D",
      "publish",
      "user-property",
      "a",
      "3",
    ]);
    await js.waitForMessages(1);
    assert.equal((await old.exited()).code, 0, old.stderr);
    await settle(100);
    assert.equal(js.messages.length, 1);
    assert.equal(js.messages[0].payload, "hello");
    assert.deepEqual({ ...js.messages[0].packet.properties?.userProperties }, {
      a: ["1", "3"],
      b: "2",
    });
    assert.deepEqual(old.messages.map((m) => [m.topic, m.qos, m.payload, m.userProperties]), [
      ["mix/x", 1, "hello", ""],
    ]);
  },
});

Deno.test({
  name: "mosquitto_pub 3.1.1 message reaches a mosquitto_sub v5 subscriber with no properties",
  ignore: !hasMosquitto,
  async fn() {
    await using b = await startBroker();
    await using sub = new MosquittoSub(
      subArgs(b.port, "mqttv5", ["-t", "old/#", "-q", "2", "-C", "1", "-W", "3"]),
    );
    await sub.subscribed();
    await pubOk(b.port, "mqttv311", ["-t", "old/x", "-m", "from-311", "-q", "2"]);
    assert.equal((await sub.exited()).code, 0, sub.stderr);
    assert.deepEqual(
      sub.messages.map((m) => [
        m.topic,
        m.qos,
        m.payload,
        m.userProperties,
        m.contentType,
        m.responseTopic,
        m.expiry,
      ]),
      [["old/x", 2, "from-311", "", "", "", ""]],
    );
  },
});
