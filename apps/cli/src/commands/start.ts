import { probes, type RunningRole, roleNames, roles } from "../roles";
import { exitWithStartupError, openRuntime, type Runtime } from "../runtime";

/**
 * `postern start [roles...]`: every role in one process by default, or the named ones for
 * scaling out. SIGINT/SIGTERM stop gracefully (exit 0); a second signal exits at once (exit 1).
 */
export async function startCommand(requested: string[]): Promise<void> {
  const unknown = requested.filter((role) => !roleNames.includes(role));
  if (unknown.length > 0)
    exitWithStartupError(new Error(`unknown role ${unknown.join(", ")} (roles: ${roleNames.join(", ")})`));
  const selected = requested.length > 0 ? roleNames.filter((r) => requested.includes(r)) : roleNames;

  let runtime: Runtime;
  try {
    runtime = await openRuntime({
      attach: false,
      onAdminTokenGenerated: (token) =>
        process.stdout.write(
          `\nGenerated the operator token (ADMIN_TOKEN), shown once; it is kept in DATA_DIR/secrets/admin-token:\n  ${token}\n\n`,
        ),
    });
  } catch (error) {
    exitWithStartupError(error);
  }

  const running: { name: string; role: RunningRole }[] = [];
  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) {
      runtime.log.warn({ signal }, "second signal: exiting without waiting");
      process.exit(1);
    }
    stopping = true;
    runtime.log.info({ signal }, "shutting down");
    for (const { name, role } of [...running].reverse()) {
      await role
        .stop()
        .catch((error: Error) => runtime.log.error({ err: error, role: name }, "role did not stop cleanly"));
    }
    await runtime.close();
    runtime.log.info("stopped");
    process.exit(0);
  };
  process.on("SIGINT", () => void stop("SIGINT"));
  process.on("SIGTERM", () => void stop("SIGTERM"));

  try {
    if (!selected.includes("api")) running.push({ name: "probes", role: await probes(runtime) });
    for (const name of selected) {
      const starter = roles[name];
      if (starter) running.push({ name, role: await starter(runtime) });
    }
  } catch (error) {
    for (const { role } of running.reverse()) await role.stop().catch(() => {});
    await runtime.close();
    exitWithStartupError(error);
  }

  const { services } = runtime;
  const lines = [
    `Postern is running (${selected.join(", ")}), pid ${process.pid}`,
    ...running.flatMap(({ role }) => role.describe.map((line) => `  ${line}`)),
    `  PostgreSQL ${services.started.includes("postgres") ? "embedded, data in DATA_DIR" : "from DATABASE_URL"}`,
    `  Redis      ${services.started.includes("redis") ? "embedded, data in DATA_DIR" : "from REDIS_URL"}`,
  ];
  process.stdout.write(`${lines.join("\n")}\n`);
}
