// Edits made without a network, kept in IndexedDB until the hub has answered them.
//
// 1. An edit is stored with its own event id (crypto.randomUUID) and the base version the person saw,
//    before anything is sent: a reload or a closed tab loses nothing.
// 2. `upload()` sends every stored edit, oldest first, in one POST /api/v1/offline. An edit leaves the
//    queue only once the hub answered it (applied, merged, parked, refused, or duplicate: a retried
//    upload whose first answer was lost is answered DUPLICATE, never applied twice); its answer is kept
//    in `outcomes` for the person to see.
// 3. Only one upload runs at a time.

const DB = "orderhub";
const QUEUE = "queue";
const OUTCOMES = "outcomes";

function open() {
  return new Promise((resolve, reject) => {
    const request = indexedDB.open(DB, 1);
    request.onupgradeneeded = () => {
      const db = request.result;
      db.createObjectStore(QUEUE, { keyPath: "seq", autoIncrement: true });
      db.createObjectStore(OUTCOMES, { keyPath: "event_id" });
    };
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

async function tx(store, mode, work) {
  const db = await open();
  return new Promise((resolve, reject) => {
    const t = db.transaction(store, mode);
    const result = work(t.objectStore(store));
    t.oncomplete = () => resolve(result && "result" in result ? result.result : result);
    t.onerror = () => reject(t.error);
  });
}

/** Store one edit (rule 1); returns it with its event id. */
export async function keep(order, baseVersion, changes) {
  const edit = {
    event_id: `web-${crypto.randomUUID()}`, order, base_version: baseVersion, changes,
    occurred_at: new Date().toISOString(),
  };
  await tx(QUEUE, "readwrite", (store) => store.add(edit));
  return edit;
}

/** Every edit still waiting, oldest first. */
export async function waiting() {
  return tx(QUEUE, "readonly", (store) => store.getAll());
}

/** The hub's answers to uploaded edits, by event id. */
export async function outcomes() {
  const all = await tx(OUTCOMES, "readonly", (store) => store.getAll());
  return Object.fromEntries(all.map((o) => [o.event_id, o]));
}

let running = null;

/** Rule 2-3: send what waits; resolves to the answers received (empty when nothing waited). */
export function upload(post) {
  if (!running) {
    running = send(post).finally(() => { running = null; });
  }
  return running;
}

async function send(post) {
  const edits = await waiting();
  if (!edits.length) return [];
  const body = { edits: edits.map(({ seq, ...edit }) => edit) };
  const answer = await post("/api/v1/offline", body); // throws while offline: everything stays queued
  const results = answer.results;
  await tx(OUTCOMES, "readwrite", (store) => {
    results.forEach((r, i) => store.put({ ...r, order: edits[i].order, changes: edits[i].changes }));
  });
  await tx(QUEUE, "readwrite", (store) => { edits.forEach((e) => store.delete(e.seq)); });
  return results;
}
