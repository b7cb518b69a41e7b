import { spawn } from "node:child_process";
import { closeSync, constants, ftruncateSync, openSync, readFileSync, writeSync } from "node:fs";
import { ok, type Result, refuse } from "@postern/result";
import { isAlive } from "./process";

/**
 * One Postern at a time owns a DATA_DIR: its embedded PostgreSQL and Redis must have one master.
 * Ownership is an exclusive flock(2) on DATA_DIR/postern.pid, held by a file descriptor of this
 * process for its whole life, as Postfix's master holds master.lock. The kernel drops the lock
 * when the process's descriptors close at exit, whatever ends it (kill -9 included), before a
 * parent reaps it: a zombie or a reused pid never looks like an owner, so a restart right after
 * a crash is never refused, and two concurrent starts cannot both win (the lock is one atomic
 * step, not a read of the pid file followed by a write).
 *
 * Node has no flock(2). The `flock` command (util-linux, or busybox) takes it on a descriptor we
 * pass it as its fd 3 and exits: the lock belongs to the open file description, which this
 * process keeps open, so it outlives that short child. Node opens files close-on-exec, so the
 * embedded servers started later do not inherit the descriptor (an orphaned redis-server must
 * not keep DATA_DIR locked). Chosen over an abstract Unix socket (Linux only, and scoped to a
 * network namespace: two containers sharing a DATA_DIR volume would both win) and over native
 * modules (none ships prebuilt binaries without an install script). Without a `flock` command
 * (macOS), the pid in the file is checked for a live process, which a zombie or a reused pid fools.
 *
 * The file is emptied, never deleted, at release: deleting it would let a starter that opened
 * the old file lock it while another locks a new one.
 */
export interface DataDirLock {
  /** Empties the pid file and closes it, which releases the lock. */
  release(): void;
}

/** Refused when another process holds it; `owner`: the pid it wrote, when it is readable yet. */
export type DataDirLockResult = Result<DataDirLock, "locked", { owner: number | undefined }>;

export async function lockDataDir(pidFile: string): Promise<DataDirLockResult> {
  const fd = openSync(pidFile, constants.O_RDWR | constants.O_CREAT, 0o644);
  let locked: boolean | "no flock command";
  try {
    locked = await flock(fd);
  } catch (error) {
    closeSync(fd);
    throw error;
  }
  const owner = pidIn(pidFile);
  const ownedElsewhere =
    locked === "no flock command" ? owner !== undefined && owner !== process.pid && isAlive(owner) : !locked;
  if (ownedElsewhere) {
    closeSync(fd);
    return refuse("locked", { owner });
  }
  ftruncateSync(fd, 0);
  writeSync(fd, `${process.pid}\n`, 0);
  let released = false;
  return ok({
    release() {
      if (released) return;
      released = true;
      ftruncateSync(fd, 0);
      closeSync(fd);
    },
  });
}

/** flock -x -n on `fd`: true when this process now holds the lock, false when another does. */
function flock(fd: number): Promise<boolean | "no flock command"> {
  return new Promise((resolve, reject) => {
    const child = spawn("flock", ["-x", "-n", "3"], { stdio: ["ignore", "ignore", "pipe", fd] });
    let stderr = "";
    child.stderr?.on("data", (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    child.on("error", (error: NodeJS.ErrnoException) =>
      error.code === "ENOENT" ? resolve("no flock command") : reject(error),
    );
    // 1: the lock is held elsewhere (-n); anything else is a failure to say.
    child.on("close", (code, signal) => {
      if (code === 0 || code === 1) resolve(code === 0);
      else reject(new Error(`flock exited ${code ?? signal}: ${stderr.trim()}`));
    });
  });
}

function pidIn(pidFile: string): number | undefined {
  try {
    const pid = Number.parseInt(readFileSync(pidFile, "utf8").split("\n")[0] ?? "", 10);
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}
