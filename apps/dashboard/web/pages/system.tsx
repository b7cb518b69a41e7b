import { useResource, useTitle } from "../hooks";
import { Loaded, StatusBadge } from "../ui";

interface SystemState {
  checks: Record<string, string>;
  queue: {
    backlogMessages: number;
    waitingJobs: number;
    activeJobs: number;
    delayedJobs: number;
    workers: number;
  } | null;
}

/** PostgreSQL, Redis, this node's roles, the delivery queue and its workers, read every 5 s. */
export function System() {
  useTitle("System");
  const state = useResource<SystemState>("/admin/system", 5_000);
  return (
    <>
      <h1>System</h1>
      <Loaded resource={state}>
        {(data) => (
          <>
            <section aria-labelledby="checks">
              <h2 id="checks">Health</h2>
              <table>
                <thead>
                  <tr>
                    <th scope="col">Part</th>
                    <th scope="col">State</th>
                  </tr>
                </thead>
                <tbody>
                  {Object.entries(data.checks).map(([part, value]) => (
                    <tr key={part} data-check={part}>
                      <td>{part}</td>
                      <td>
                        {value === "ok" ? <StatusBadge status="ok" /> : <span class="error">{value}</span>}
                      </td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </section>
            <section aria-labelledby="queue">
              <h2 id="queue">Delivery queue</h2>
              {data.queue ? (
                <dl class="counters">
                  <div class="counter">
                    <dt>messages waiting</dt>
                    <dd>{data.queue.backlogMessages}</dd>
                  </div>
                  <div class="counter">
                    <dt>jobs waiting</dt>
                    <dd>{data.queue.waitingJobs}</dd>
                  </div>
                  <div class="counter">
                    <dt>jobs active</dt>
                    <dd>{data.queue.activeJobs}</dd>
                  </div>
                  <div class="counter">
                    <dt>retries scheduled</dt>
                    <dd>{data.queue.delayedJobs}</dd>
                  </div>
                  <div class="counter">
                    <dt>workers</dt>
                    <dd data-counter="workers">{data.queue.workers}</dd>
                  </div>
                </dl>
              ) : (
                <p class="state error">Redis does not answer: the queue cannot be read.</p>
              )}
            </section>
          </>
        )}
      </Loaded>
    </>
  );
}
