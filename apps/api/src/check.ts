const checkTimeoutMs = 2000;

export type CheckResult = "ok" | string;

/** Runs a probe with a deadline: "ok", or why it failed. */
export async function check(probe: () => Promise<unknown>): Promise<CheckResult> {
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      probe(),
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer within ${checkTimeoutMs} ms`)), checkTimeoutMs);
      }),
    ]);
    return "ok";
  } catch (error) {
    return (error as Error).message || "unavailable";
  } finally {
    clearTimeout(timer);
  }
}
