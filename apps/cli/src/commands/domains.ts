import { readFile } from "node:fs/promises";
// The domain service alone: the package index also brings the DKIM signer (mailauth).
import { createDomainService, type DomainView } from "@postern/dkim/domains";
import { domainName } from "@postern/projects";
import { type Command, InvalidArgumentError, Option } from "commander";
import type { Runtime } from "../runtime";
import { exitCodes } from "./exit-codes";
import { CommandFailure, type OutputOptions, operate, table } from "./operator";
import { cliActor, validProjectId } from "./project";

function domainsOf(runtime: Runtime) {
  return createDomainService({ db: runtime.db, redis: runtime.redis, config: runtime.config });
}

function validDomain(value: string): string {
  const parsed = domainName.safeParse(value);
  if (!parsed.success) throw new InvalidArgumentError("must be a domain name like example.com");
  return parsed.data;
}

/** The domain's id, or its name (what an operator has at hand), within the project. */
async function domainIdOf(runtime: Runtime, projectId: string, domain: string): Promise<string> {
  const found = (await domainsOf(runtime).list(projectId)).find(
    (d) => d.id === domain || d.domain === domain,
  );
  if (!found)
    throw new CommandFailure(exitCodes.notFound, "not_found", `no domain ${domain} in project ${projectId}`);
  return found.id;
}

function json(domain: DomainView) {
  return {
    ...domain,
    verifiedAt: domain.verifiedAt?.toISOString() ?? null,
    createdAt: domain.createdAt.toISOString(),
    keys: domain.keys.map((key) => ({
      ...key,
      createdAt: key.createdAt.toISOString(),
      activatedAt: key.activatedAt?.toISOString() ?? null,
    })),
  };
}

function describe(domain: DomainView, states?: Map<string, string>): string {
  const keys = domain.keys.map((k) => `${k.selector} ${k.algorithm} ${k.status}`).join(", ");
  const records = domain.records
    .map(
      (r) =>
        `${states ? `${(states.get(r.name + r.purpose + r.type) ?? "").padEnd(13)} ` : ""}${r.purpose.padEnd(5)}  ${r.type}  ${r.name}\n    ${r.value}`,
    )
    .join("\n");
  return `${table([
    ["id", domain.id],
    ["domain", domain.domain],
    ["verified", domain.verified ? "yes" : "no"],
    ["keys", keys],
  ])}\nDNS records to publish:\n${records}`;
}

interface KeyOptions extends OutputOptions {
  algorithm?: "rsa" | "ed25519";
  privateKeyFile?: string;
}

async function keyInput(options: KeyOptions) {
  // The private key is read from a file: on the command line, `ps` would show it.
  const privateKey = options.privateKeyFile ? await readFile(options.privateKeyFile, "utf8") : undefined;
  return { algorithm: options.algorithm, privateKey };
}

const algorithmOption = () =>
  new Option("--algorithm <algorithm>", "key type of a generated key (rsa: 2048 bits)").choices([
    "rsa",
    "ed25519",
  ]);
const keyFileOption = () =>
  new Option("--private-key-file <path>", "import this PEM private key instead of generating one");

/** `postern domains list|add|verify|rotate|remove`: a project's DKIM domains (docs/domains.md). */
export function registerDomainCommands(program: Command): void {
  const domains = program.command("domains").description("a project's sending domains and their DKIM keys");
  domains
    .command("list")
    .description("list a project's domains")
    .argument("<projectId>", "project id")
    .option("--json", "print JSON for scripts")
    .action((projectId: string, options: OutputOptions) =>
      operate(options, async (runtime) => {
        const list = await domainsOf(runtime).list(validProjectId(projectId));
        return {
          json: { items: list.map(json) },
          text:
            list.length === 0
              ? "no domains"
              : list
                  .map(
                    (d) =>
                      `${d.id}  ${d.domain}  ${d.verified ? "verified" : "not verified"}  ${d.keys.map((k) => `${k.selector}:${k.status}`).join(" ")}`,
                  )
                  .join("\n"),
        };
      }),
    );
  domains
    .command("add")
    .description("add a domain with a new DKIM key and print the DNS records to publish")
    .argument("<projectId>", "project id")
    .argument("<domain>", "domain name", validDomain)
    .addOption(algorithmOption())
    .addOption(keyFileOption())
    .option("--json", "print JSON for scripts")
    .action((projectId: string, domain: string, options: KeyOptions) =>
      operate(options, async (runtime) => {
        const result = await domainsOf(runtime).create(
          validProjectId(projectId),
          { domain, ...(await keyInput(options)) },
          cliActor,
        );
        if (!result.ok)
          throw new CommandFailure(
            result.reason === "domain_exists" ? exitCodes.conflict : exitCodes.usage,
            result.reason,
            result.message,
          );
        return { json: json(result.value), text: describe(result.value) };
      }),
    );
  domains
    .command("verify")
    .description("look the domain's records up in DNS; a key whose record is found starts signing")
    .argument("<projectId>", "project id")
    .argument("<domain>", "domain name or id")
    .option("--json", "print JSON for scripts")
    .action((projectId: string, domain: string, options: OutputOptions) =>
      operate(options, async (runtime) => {
        const id = await domainIdOf(runtime, validProjectId(projectId), domain);
        const result = await domainsOf(runtime).verify(projectId, id, cliActor);
        if (!result) throw new CommandFailure(exitCodes.notFound, "not_found", `no domain ${domain}`);
        const states = new Map(result.records.map((r) => [r.name + r.purpose + r.type, r.state]));
        return {
          json: { ...json(result.domain), records: result.records, activated: result.activated },
          text: describe(result.domain, states),
        };
      }),
    );
  domains
    .command("rotate")
    .description("add the next DKIM key; the current one signs until the new one is verified")
    .argument("<projectId>", "project id")
    .argument("<domain>", "domain name or id")
    .addOption(algorithmOption())
    .addOption(keyFileOption())
    .option("--json", "print JSON for scripts")
    .action((projectId: string, domain: string, options: KeyOptions) =>
      operate(options, async (runtime) => {
        const id = await domainIdOf(runtime, validProjectId(projectId), domain);
        const result = await domainsOf(runtime).rotate(projectId, id, await keyInput(options), cliActor);
        if (!result.ok)
          throw new CommandFailure(
            result.reason === "invalid_key" ? exitCodes.usage : exitCodes.conflict,
            result.reason,
            result.message,
          );
        return { json: json(result.value), text: describe(result.value) };
      }),
    );
  domains
    .command("remove")
    .description("remove a domain and its keys; its messages are no longer signed")
    .argument("<projectId>", "project id")
    .argument("<domain>", "domain name or id")
    .option("--json", "print JSON for scripts")
    .action((projectId: string, domain: string, options: OutputOptions) =>
      operate(options, async (runtime) => {
        const id = await domainIdOf(runtime, validProjectId(projectId), domain);
        await domainsOf(runtime).remove(projectId, id, cliActor);
        return { json: { id, removed: true }, text: `removed domain ${domain}` };
      }),
    );
}
