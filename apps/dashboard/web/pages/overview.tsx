import { useEffect, useRef } from "preact/hooks";
import uPlot from "uplot";
import { query, type Stats, statusesOverTime } from "../api";
import { useResource, useTitle } from "../hooks";
import { useScope } from "../scope";
import { Loaded, Time } from "../ui";

/** How often the counters and the chart are read again. */
const refreshMs = 5_000;

const seriesColours: Record<(typeof statusesOverTime)[number], string> = {
  accepted: "#1f5fbf",
  delivered: "#1a7f37",
  deferred: "#9a6700",
  failed: "#c0362c",
};

export function Overview() {
  useTitle("Overview");
  const scope = useScope();
  const stats = useResource<Stats>(`${scope.api}/stats${query({ series: "hour" })}`, refreshMs);
  return (
    <>
      <h1>Overview</h1>
      <Loaded resource={stats}>
        {(data) => (
          <>
            <section aria-labelledby="counters">
              <h2 id="counters">Last 24 hours</h2>
              <dl class="counters" aria-live="polite">
                {["accepted", "delivered", "deferred", "failed", "held", "rejected"].map((name) => (
                  <div key={name} class={`counter status-${name}`}>
                    <dt>{name}</dt>
                    <dd data-counter={name}>{data.counts[name] ?? 0}</dd>
                  </div>
                ))}
              </dl>
            </section>
            <section aria-labelledby="over-time">
              <h2 id="over-time">Messages by hour of acceptance</h2>
              <Chart stats={data} />
            </section>
            <div class="columns">
              <section aria-labelledby="quota">
                <h2 id="quota">Quota</h2>
                <QuotaMeter label="This minute" window={data.quota.perMinute} />
                <QuotaMeter label="Today" window={data.quota.daily} />
              </section>
              <section aria-labelledby="latency">
                <h2 id="latency">Delivery latency</h2>
                {data.deliveryLatencyMs ? (
                  <dl class="latency">
                    <dt>p50</dt>
                    <dd>{data.deliveryLatencyMs.p50} ms</dd>
                    <dt>p90</dt>
                    <dd>{data.deliveryLatencyMs.p90} ms</dd>
                    <dt>p99</dt>
                    <dd>{data.deliveryLatencyMs.p99} ms</dd>
                    <dt>sampled</dt>
                    <dd>{data.deliveryLatencyMs.sampled} deliveries</dd>
                  </dl>
                ) : (
                  <p class="state empty">No deliveries in this window.</p>
                )}
              </section>
            </div>
            <p class="muted">
              From <Time iso={data.from} /> to <Time iso={data.to} />, read every {refreshMs / 1000} s.
            </p>
          </>
        )}
      </Loaded>
    </>
  );
}

function QuotaMeter({ label, window }: { label: string; window: Stats["quota"]["perMinute"] }) {
  return (
    <p class="quota">
      <span>
        {label}: {window.used ?? "?"} of {window.limit} recipients
      </span>
      <meter min={0} max={window.limit} value={window.used ?? 0} aria-label={`${label} quota used`} />
      {window.resetsAt ? (
        <small>
          resets <Time iso={window.resetsAt} />
        </small>
      ) : null}
    </p>
  );
}

/** uPlot draws; this only hands it the hourly series (local time on the axis, as uPlot does). */
function Chart({ stats }: { stats: Stats }) {
  const container = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  const series = stats.series ?? [];
  const data: uPlot.AlignedData = [
    series.map((point) => Date.parse(String(point.hour)) / 1000),
    ...statusesOverTime.map((status) => series.map((point) => Number(point[status] ?? 0))),
  ];

  useEffect(() => {
    const element = container.current;
    if (!element) return;
    const options: uPlot.Options = {
      width: Math.max(320, element.clientWidth),
      height: 240,
      series: [
        {},
        ...statusesOverTime.map((status) => ({
          label: status,
          stroke: seriesColours[status],
          width: 2,
        })),
      ],
      axes: [{}, { label: "messages" }],
      scales: { x: { time: true } },
    };
    plot.current = new uPlot(options, data, element);
    const resize = () => plot.current?.setSize({ width: Math.max(320, element.clientWidth), height: 240 });
    window.addEventListener("resize", resize);
    return () => {
      window.removeEventListener("resize", resize);
      plot.current?.destroy();
      plot.current = null;
    };
    // The chart is made once; new data goes through setData below.
  }, []);

  useEffect(() => {
    plot.current?.setData(data);
  });

  const total = series.reduce((sum, point) => sum + Number(point.accepted ?? 0), 0);
  return (
    <figure class="chart">
      <div
        ref={container}
        role="img"
        aria-label={`Chart: ${total} messages accepted in the window, by hour and status`}
      />
      {total === 0 ? <figcaption class="state empty">Nothing accepted in this window yet.</figcaption> : null}
    </figure>
  );
}
