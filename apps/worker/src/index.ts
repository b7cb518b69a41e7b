export { type SweepResult, sweep } from "./sweeper";
export { type RunningWorker, startWorker, type WorkerDeps } from "./worker";
