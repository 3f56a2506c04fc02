/**
 * Generates a throwaway PKI with openssl (Debian's `openssl` 3.x) into a temp
 * directory: a test CA, a server certificate for 127.0.0.1/localhost, a client
 * certificate `CN=device-42`, an expired client certificate signed by the same
 * CA, and a client certificate from a foreign CA. EC P-256 keys keep it fast
 * (about 15 openssl runs, well under a second).
 *
 * Always `await using` the result (or call `remove()`): disposal deletes the
 * directory. {@link serverFingerprint} tells which certificate a listener serves.
 */
import { X509Certificate } from "node:crypto";
import * as tls from "node:tls";

/** Paths of one certificate and its key. */
export interface CertPair {
  cert: string;
  key: string;
}

/** A generated PKI in a temp directory. */
export interface TestPki extends AsyncDisposable {
  dir: string;
  /** The test CA's certificate (trust anchor for the server and for client certificates). */
  caCert: string;
  /** Server certificate: CN=localhost, SAN DNS:localhost, IP:127.0.0.1. */
  server: CertPair;
  /** A second server certificate (same names, new key), for reload tests. */
  server2: CertPair;
  /** Client certificate: CN=device-42, O=Acme, SAN DNS:device-42.example, email. */
  client: CertPair;
  /** Client certificate from the test CA, valid only in January 2020. */
  expired: CertPair;
  /** Client certificate CN=device-42 signed by another CA. */
  foreign: CertPair;
  /** The foreign CA's certificate. */
  foreignCaCert: string;
  remove(): Promise<void>;
}

const CA_CONFIG = `[ca]
default_ca = test_ca
[test_ca]
database = index.txt
new_certs_dir = .
serial = serial.txt
default_md = sha256
policy = any
unique_subject = no
copy_extensions = none
[any]
commonName = supplied
organizationName = optional
[server_ext]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost,IP:127.0.0.1
[client_ext]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = clientAuth
subjectAltName = DNS:device-42.example,email:device-42@example.com
`;

async function openssl(dir: string, args: string[]): Promise<void> {
  const out = await new Deno.Command("openssl", {
    args,
    cwd: dir,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success) {
    throw new Error(
      `openssl ${args.join(" ")} failed: ${new TextDecoder().decode(out.stderr).trim()}`,
    );
  }
}

const EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];

/** Self-signed CA certificate `<name>.crt` with key `<name>.key`. */
async function makeCa(dir: string, name: string, cn: string): Promise<void> {
  await openssl(dir, [
    "req",
    "-x509",
    ...EC,
    "-keyout",
    `${name}.key`,
    "-out",
    `${name}.crt`,
    "-days",
    "3",
    "-subj",
    `/CN=${cn}`,
    "-addext",
    "basicConstraints=critical,CA:TRUE",
    "-addext",
    "keyUsage=critical,keyCertSign,cRLSign",
  ]);
}

/** A key and a certificate `<name>.crt` signed by CA `<ca>` through `openssl ca`. */
async function issue(
  dir: string,
  ca: string,
  name: string,
  subject: string,
  extensions: "server_ext" | "client_ext",
  dates: string[] = ["-days", "3"],
): Promise<CertPair> {
  await openssl(dir, [
    "req",
    ...EC,
    "-keyout",
    `${name}.key`,
    "-out",
    `${name}.csr`,
    "-subj",
    subject,
  ]);
  await openssl(dir, [
    "ca",
    "-batch",
    "-config",
    "ca.cnf",
    "-cert",
    `${ca}.crt`,
    "-keyfile",
    `${ca}.key`,
    "-extensions",
    extensions,
    ...dates,
    "-notext",
    "-in",
    `${name}.csr`,
    "-out",
    `${name}.crt`,
  ]);
  return { cert: `${dir}/${name}.crt`, key: `${dir}/${name}.key` };
}

/** Generates the PKI described in the module doc. */
export async function makeTestPki(): Promise<TestPki> {
  const dir = await Deno.makeTempDir({ prefix: "mqtt-pki-" });
  const remove = () => Deno.remove(dir, { recursive: true }).catch(() => {});
  try {
    await Deno.writeTextFile(`${dir}/ca.cnf`, CA_CONFIG);
    await Deno.writeTextFile(`${dir}/index.txt`, "");
    await Deno.writeTextFile(`${dir}/serial.txt`, "1000\n");
    await makeCa(dir, "ca", "Test CA");
    await makeCa(dir, "foreign-ca", "Foreign CA");
    const server = await issue(dir, "ca", "server", "/CN=localhost", "server_ext");
    const server2 = await issue(dir, "ca", "server2", "/CN=localhost", "server_ext");
    const client = await issue(dir, "ca", "client", "/CN=device-42/O=Acme", "client_ext");
    const expired = await issue(dir, "ca", "expired", "/CN=device-42", "client_ext", [
      "-startdate",
      "20200101000000Z",
      "-enddate",
      "20200131000000Z",
    ]);
    const foreign = await issue(dir, "foreign-ca", "foreign", "/CN=device-42", "client_ext");
    return {
      dir,
      caCert: `${dir}/ca.crt`,
      server,
      server2,
      client,
      expired,
      foreign,
      foreignCaCert: `${dir}/foreign-ca.crt`,
      remove,
      [Symbol.asyncDispose]: remove,
    };
  } catch (err) {
    await remove();
    throw err;
  }
}

/**
 * Completes a TLS handshake with node:tls (trusting the test CA, presenting `cert` if given) and
 * returns the server certificate's SHA-256 fingerprint; rejects with the handshake error.
 */
export async function serverFingerprint(
  port: number,
  p: TestPki,
  cert?: CertPair,
): Promise<string> {
  const socket = tls.connect({
    host: "127.0.0.1",
    port,
    servername: "localhost",
    ca: await Deno.readTextFile(p.caCert),
    ...(cert
      ? { cert: await Deno.readTextFile(cert.cert), key: await Deno.readTextFile(cert.key) }
      : {}),
  });
  const closed = new Promise<void>((resolve) => socket.once("close", () => resolve()));
  try {
    return await new Promise<string>((resolve, reject) => {
      socket.once("secureConnect", () => resolve(socket.getPeerCertificate().fingerprint256));
      socket.once("error", reject);
    });
  } finally {
    socket.destroy();
    await closed;
  }
}

/** SHA-256 fingerprint of a PEM certificate file, as node formats it. */
export async function fingerprintOf(path: string): Promise<string> {
  return new X509Certificate(await Deno.readTextFile(path)).fingerprint256;
}
