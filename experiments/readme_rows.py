"""One README results row per study: (setting, what was measured), from its JSON.

    doc = json.loads(Path("results/experiments/bench_psi.json").read_text())
    title, text = ROWS["bench_psi"](doc)

Every number comes from the JSON; the wording of each goal ("met", "**not
met**") from the JSON's own checks or goals, never from this file.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["ROWS", "met"]

Row = tuple[str, str]
Result = Mapping[str, Any]


def met(ok: object) -> str:
    return "met" if ok is True else "**not met**"


def _n(x: float) -> str:
    return f"{x:,.0f}"


def _eps(x: float) -> str:
    return f"{x:g}"


def horizontal(r: Result) -> Row:
    pp, seg = r["purchase_prediction"], r["segmentation"]
    fed = pp["federated"]
    per = pp["federated_model_on_each_partner"]
    pairs = [(per.get(p), a["test_auc"]) for p, a in pp["alone"].items()]
    pairs = [(f, a) for f, a in pairs if f is not None and a is not None]
    wins = sum(f > a for f, a in pairs)
    checks = pp["checks"]
    ratio = seg["objective_pooled"]["ratio"]
    text = (
        f"purchase prediction test AUC: federated {fed['test_auc']:.4f} "
        f"({fed['rounds_run']} rounds), centralized {pp['centralized']['test_auc']:.4f}, "
        f"partners alone {pp['alone_mean_test_auc']:.4f} on average; the federated model beats "
        f"the partner's own on {wins} of {len(pairs)} partners; federated >= centralized - 0.01 "
        f"{met(checks['federated_ge_centralized_minus_0.01'])}, federated > mean alone "
        f"{met(checks['federated_gt_alone_mean'])}; k-means objective on pooled rows "
        f"federated / centralized {ratio:.4f} "
        f"(goal <= 1.02 {met(seg['checks']['within_2_percent'])})"
    )
    return f"{len(r['partners'])} region partners, simulation", text


def he_equivalence(r: Result) -> Row:
    pp, seg = r["purchase_prediction"], r["segmentation"]
    t, s = pp["trace"], seg["trace"]
    auc = pp["test_auc"]
    findings = len(pp["findings"]) + len(seg["findings"])
    text = (
        f"encrypted vs plaintext global model: max difference {t['max_ratio']:.3g} of the "
        f"parameter scale over {t['common_steps']} rounds (target {r['relative_target']:g}: "
        f"{met(all(pp['checks'].values()))}); test AUC {auc['plaintext']:.6f} plaintext, "
        f"{auc['encrypted']:.6f} encrypted; k-means centroids within {s['max_abs_diff']:.2g} "
        f"({s['max_ratio']:.2g} of their scale) over {s['common_steps']} Lloyd iterations "
        f"({met(all(seg['checks'].values()))})"
    )
    if findings:
        text += f"; {findings} finding(s) in the JSON"
    return f"{len(r['partners'])} partners, simulation", text


def kmeans_modes(r: Result) -> Row:
    runs = r["runs"]
    worst = max(runs, key=lambda x: x["ratio"])
    per_mode = []
    for mode in r["modes"]:
        ratios = [x["ratio"] for x in runs if x["mode"] == mode]
        per_mode.append(f"{mode} {min(ratios):.4f}-{max(ratios):.4f}")
    diffs = [x["vs_summed"] for x in runs if "vs_summed" in x]
    text = (
        f"k-means objective on the pooled rows, federated / centralized (scikit-learn, "
        f"n_init 10), k = {', '.join(map(str, r['ks']))}: "
        + "; ".join(per_mode)
        + f"; worst {worst['ratio']:.4f} ({worst['table']}, k = {worst['k']}, {worst['mode']}); "
        f"goal <= 1.02 in every mode, table and k {met(all(r['checks'].values()))}"
    )
    if diffs:
        text += f"; masked modes equal plaintext summed seeding within {max(diffs):.1e}"
    moves = [x["one_row_steps"] for x in runs if "one_row_steps" in x]
    if moves:
        text += (
            f"; Lloyd steps whose sizes differ by one row (that row is the difference of "
            f"the two steps' sums; only DP bounds it): {sum(moves)} over {len(moves)} jobs"
        )
    tables = " and ".join(t["title"] for t in r["tables"].values())
    return f"{tables}, simulation", text


def bench_secagg(r: Result) -> Row:
    rows = r["results"]
    goals = r["goals"]
    sizes = sorted({x["size"] for x in rows})
    parts = sorted({x["partners"] for x in rows})
    drops = sorted({x["dropout"] for x in rows})
    # The row shown: the largest (parameters x partners) measured, at its most dropouts.
    worst = max(rows, key=lambda x: (x["size"] * x["partners"], x["partners"], x["dropout"]))
    byte = goals["masked_reply_bytes"]
    unmask = goals["unmask_time"]
    text = (
        f"per round, at {_n(worst['size'])} parameters, {worst['partners']} partners, "
        f"{worst['dropout']:.0%} dropouts: partner time plaintext "
        f"{worst['plaintext']['partner_seconds']:.4f} s, masked "
        f"{worst['masked']['partner_seconds']:.2f} s (every stage), ckks "
        f"{worst['ckks']['partner_seconds']:.2f} s, ckks+masked "
        f"{worst['ckks+masked']['partner_seconds']:.2f} s; coordinator masked "
        f"{worst['masked']['coordinator_seconds']:.2f} s, ckks "
        f"{worst['ckks']['coordinator_seconds']:.2f} s; bytes per masked reply <= "
        f"{byte['goal']:g}x plaintext {met(byte['met'])} (worst {byte['worst']:.4f}x); "
        f"unmasking at 100k parameters, 100 partners, 30% dropouts < "
        f"{unmask['goal_seconds']:g} s of coordinator time "
        + (
            "not run"
            if unmask["met"] is None
            else f"{met(unmask['met'])} ({unmask['coordinator_seconds']:.2f} s)"
        )
        + "; every masked sum exact on the fixed-point grid "
        + met(all(x["masked"]["exact_on_grid"] for x in rows))
    )
    setting = (
        f"{', '.join(_n(s) for s in sizes)} parameters x {', '.join(map(str, parts))} virtual "
        f"partners x {', '.join(f'{d:.0%}' for d in drops)} dropouts, one process"
    )
    skipped = r.get("skipped") or []
    if skipped:
        text += "; not run: " + ", ".join(
            f"{_n(s['size'])} parameters x {s['partners']} partners" for s in skipped
        )
    return setting, text


def _goal_sizes(goals: Sequence[Mapping[str, Any]], name: str) -> str:
    ok = [g["size"] for g in goals if g["goal"] == name and g["passed"]]
    bad = [g["size"] for g in goals if g["goal"] == name and not g["passed"]]
    parts = []
    if ok:
        parts.append("met at " + ", ".join(_n(x) for x in ok))
    if bad:
        parts.append("**not met** at " + ", ".join(_n(x) for x in bad))
    return "; ".join(parts)


def bench_he(r: Result) -> Row:
    rows = sorted(r["results"], key=lambda x: x["size"])
    goals = r["goals"]
    names = list(dict.fromkeys(g["goal"] for g in goals))
    ratios = ", ".join(
        f"{x['bytes']['ratio_ciphertext_to_float32']:.2f}x at {_n(x['size'])}" for x in rows
    )
    big = rows[-1]
    sec, acc = big["seconds"]["encrypted"], big["accuracy"]
    floor = r["parameter_sets"][r["ckks_parameter_set_used"]]["byte_ratio_floor_vs_float32"]
    round_ratio = big["seconds"]["ratio_round_encrypted_to_plaintext"]
    text = (
        f"ciphertext reply bytes vs float32: {ratios} parameters (floor of one 60-bit prime: "
        f"{floor:g}x); " + "; ".join(f"{n}: {_goal_sizes(goals, n)}" for n in names) + ". "
        f"At {_n(big['size'])} parameters: encryption {sec['encryption_per_partner']:.2f} s "
        f"per partner, aggregation {sec['aggregation']:.2f} s, decryption "
        f"{sec['decryption']:.2f} s; round {round_ratio:.1f}x the plaintext round in one "
        f"process; max error {acc['max_abs_error_encrypted']:.2g} absolute "
        f"({acc['relative_error']:.1g} relative)"
    )
    return f"{r['partners']} partners, one process, median of {r['repeats']}", text


#: A deployment benchmark's modes run one after another on the same cores: above this
#: 1-minute load per core (at its start or end) other work decides the ratios, and the
#: goals are not judged.
MAX_LOAD_PER_CORE = 4.0


def _overloaded(r: Result) -> str | None:
    """Why a deployment benchmark's ratios are not judged (None: they are).

    >>> _overloaded({"machine": {"cpus": 2, "loadavg_1min_at_start": 61.4,
    ...                          "loadavg_1min_at_end": 33.5}})
    'not judged: load 61.4 → 33.5 on 2 cores, modes run one after another'
    >>> _overloaded({"machine": {"cpus": 2, "loadavg_1min_at_start": 1.0,
    ...                          "loadavg_1min_at_end": 2.0}}) is None
    True
    """
    m = r.get("machine", {})
    cpus = m.get("cpus") or 1
    start, end = m.get("loadavg_1min_at_start"), m.get("loadavg_1min_at_end")
    if not isinstance(start, int | float) or not isinstance(end, int | float):
        return None
    if max(start, end) <= MAX_LOAD_PER_CORE * cpus:
        return None
    order = "interleaved" if r.get("repeats", 1) > 1 else "run one after another"
    return f"not judged: load {start:.1f} → {end:.1f} on {cpus} cores, modes {order}"


def bench_he_deployment(r: Result) -> Row:
    p, e = r["modes"]["plaintext"], r["modes"]["encrypted"]
    g, ratio = r["goal"], r["ratio_encrypted_to_plaintext"]
    loaded = _overloaded(r)
    verdict = (lambda _ok: "not judged") if loaded else met
    text = (
        f"median encrypted round {g['value']:.2f}x the plaintext round "
        f"({e['median_round_s']:.1f} s vs {p['median_round_s']:.1f} s; goal {g['target']:g}x "
        f"{verdict(g['passed'])}); job wall time {ratio['job_wall_time']:.2f}x; one reply "
        f"{r['bytes']['ciphertext'] / 1e6:.1f} MB encrypted vs "
        f"{r['bytes']['plaintext_float64'] / 1e6:.1f} MB float64"
    )
    for goal in r.get("goals", []):  # the secure-aggregation modes (issue 14)
        mode = goal["goal"].split(" round")[0]
        if mode == "encrypted":
            continue
        m = r["modes"][mode]
        text += (
            f"; {mode} round {m['median_round_s']:.1f} s = {goal['value']:.2f}x plaintext "
            f"(goal {goal['target']:g}x {verdict(goal['passed'])}, test AUC {m['test_auc']:.4f})"
        )
    more = r.get("one_more_exchange", {})
    if "ratio_masked_exchange" in more:  # docs/secure_aggregation.md: two are necessary
        text += (
            f"; plaintext round + one more exchange (the masked unmasking, "
            f"{more['masked_second_exchange_s']:.2f} s): {more['ratio_masked_exchange']:.2f}x, "
            f"{more['ratio_own_exchange']:.2f}x with the plaintext round's own exchange "
            f"(an estimate, not a bound)"
        )
    if loaded:
        text += f"; goals {loaded}"
    title = (
        f"SuperLink + {len(r['partners'])} SuperNodes over TLS, "
        f"{_n(r['model']['parameters'])}-parameter MLP, {r['job']['rounds']} rounds"
        + (f", {r['repeats']} interleaved runs per mode" if r.get("repeats", 1) > 1 else "")
    )
    return title, text


def bench_deployment(r: Result) -> Row:
    s, d = r["modes"]["simulation"], r["modes"]["deployment"]
    g, ratio = r["goal"], r["ratio_deployment_to_simulation"]
    loaded = _overloaded(r)
    text = (
        f"median round {d['median_round_s']:.1f} s deployed vs {s['median_round_s']:.1f} s "
        f"simulated = {g['value']:.2f}x (goal {g['target']:g}x {loaded or met(g['passed'])}); job "
        f"{ratio['start_to_end']:.2f}x end to end; test AUC {d['test_auc']:.4f} vs "
        f"{s['test_auc']:.4f}"
    )
    cpu_s, cpu_d = s.get("cpu_per_round_s", {}), d.get("cpu_per_round_s", {})
    if cpu_s and cpu_d:
        parts = ", ".join(f"{k} {v:.2f}" for k, v in sorted(cpu_d.items(), key=lambda kv: -kv[1]))
        text += (
            f"; CPU per round {sum(cpu_d.values()):.2f} core-s deployed ({parts}) vs "
            f"{sum(cpu_s.values()):.2f} simulated"
        )
    if r.get("repeats", 1) > 1:
        text += f"; {r['repeats']} interleaved runs per mode"
    flower = r["modes"].get("deployment_flower_pull")
    if flower is not None:
        text += (
            f"; with the nodes' idle pull at Flower's 3 s instead of fedcollab's 0.2 s (the "
            f"gateway still holds their empty pulls): median round "
            f"{flower['median_round_s']:.1f} s"
        )
    title = (
        f"the demo's purchase job, {len(r['partners'])} partners, encryption "
        f"{r['job']['encryption']}, {r['job']['rounds']} rounds: SuperLink + SuperNodes over TLS "
        "vs simulation engine"
    )
    return title, text


def privacy_utility(r: Result) -> Row:
    summary = r["summary"]
    (none,) = [s for s in summary if s["level"] == "none"]

    def family(level: str) -> str:
        rows = sorted(
            (s for s in summary if s["level"] == level), key=lambda s: s["target_epsilon"]
        )
        eps = " / ".join(_eps(s["target_epsilon"]) for s in rows)
        aucs = " / ".join(f"{s['test_auc_exact']['mean']:.3f}" for s in rows)
        estimates = " / ".join(f"{s['test_auc']['mean']:.3f}" for s in rows)
        return f"epsilon {eps}: {aucs} (the jobs' own DP estimates: {estimates})"

    mia = [s["mia_auc"]["mean"] for s in summary]
    null = max(s["mia_null_auc_std"]["mean"] for s in summary)
    above = [s["setting"] for s in summary if abs(s["mia_auc"]["mean"] - 0.5) > 2 * null]
    chance = (
        "within 2 null std of chance (0.5) in every setting"
        if not above
        else f"more than 2 null std from chance in {', '.join(above)}"
    )
    text = (
        "test AUC of the released model on the pooled test rows: "
        f"without DP {none['test_auc_exact']['mean']:.3f} (centralized "
        f"{r['centralized']['test_auc']:.3f}); DP-SGD {family('sample')}; DP-FedAvg (partner "
        f"level) {family('client')}; loss-threshold membership inference: mean attack AUC "
        f"{min(mia):.3f} to {max(mia):.3f}, {chance} (null std {null:.3f}); every achieved "
        f"epsilon <= target {met(all(r['checks'].values()))}"
    )
    st = r["settings"]
    seeds = len(st["seeds"])
    title = f"{len(r['partners'])} partners, {seeds} seed(s), {st['rounds']} rounds"
    if "client_rounds" in st:
        title += (
            f" (DP-FedAvg {st['client_rounds']} rounds of {st['client_local_epochs']} local epochs)"
        )
    return title, text


def vertical(r: Result) -> Row:
    psi, lr, base = r["psi"], r["vertical_lr"], r["baselines"]
    sizes = " / ".join(_n(v) for v in psi["set_sizes"].values())
    exact = "exactly the true intersection" if psi["exact"] else "**not** the true intersection"
    checks = r["checks"]
    gap_ok = next(v for k, v in checks.items() if k.startswith("vertical LR"))
    dp = [(k, v) for k, v in r["split_nn"].items() if k != "none"]
    dp_text = " and ".join(
        f"{v['test_auc']:.4f} at epsilon {_eps(v['target_epsilon'])}" for k, v in dp
    )
    text = (
        f"PSI finds {exact} ({_n(psi['intersection'])} of {sizes} ids); test AUC: "
        f"{r['parties'][0]} alone {base['label_holder_alone']['test_auc']:.4f}, vertical LR "
        f"{lr['encrypted']['test_auc']:.5f} encrypted and {lr['plaintext']['test_auc']:.5f} "
        f"plaintext (difference {lr['abs_auc_difference']:.2g}), centralized LR "
        f"{base['centralized']['test_auc']:.4f} (gap {r['centralized_minus_vertical_lr']:.4f}, "
        f"goal <= 0.005 {met(gap_ok)})"
    )
    label_dp = lr.get("label_dp")
    if label_dp and "average_last" in label_dp:
        dp_ok = next(v for k, v in checks.items() if k.startswith("vertical LR with label DP"))
        last = base["centralized"]["test_auc"] - float(
            np.mean(label_dp["test_auc_runs_last_iterate"])
        )
        text += (
            f"; with label DP at epsilon {_eps(label_dp['label_epsilon'])} (last "
            f"{label_dp['average_last']} of {label_dp['round_trips']} iterates averaged) "
            f"{label_dp['test_auc']:.4f}, mean of {label_dp['runs']} runs (gap "
            f"{r['centralized_minus_vertical_lr_label_dp']:.4f}, goal <= 0.005 {met(dp_ok)}; "
            f"last iterate: gap {last:.4f})"
        )
    text += f"; split NN {r['split_nn']['none']['test_auc']:.4f}"
    if dp:
        text += f", split NN with embedding DP {dp_text}"
    rows = r.get("settings", {}).get("row_limit")
    scope = f", label holder's first {_n(rows)} rows" if rows else ""
    return f"credit default over {' / '.join(r['parties'])}, in process{scope}", text


def bench_vertical_deployment(r: Result) -> Row:
    p, e = r["modes"]["plaintext"], r["modes"]["encrypted"]
    ratio, goals = r["ratio_encrypted_to_plaintext"], r["goals"]
    load0, load1 = r["machine"]["loadavg_at_start"][0], r["machine"]["loadavg_at_end"][0]
    text = (
        f"test AUC {e['test_auc']:.6f} encrypted vs {p['test_auc']:.6f} plaintext (difference "
        f"{r['auc_abs_difference']:.2g}, goal < 0.0005 {met(goals[0]['passed'])}); median "
        f"iteration ({r['job']['hops_per_iteration']} relay hops) {e['median_iteration_s']:.1f} s "
        f"vs {p['median_iteration_s']:.1f} s = {ratio['median_iteration']:.2f}x "
        f"({met(goals[1]['passed'])}), job {ratio['job_wall_time']:.2f}x "
        f"({met(goals[2]['passed'])}; goal 3x, FATE's Paillier hetero-LR 7.5x); PSI "
        f"{e['psi_s']:.0f} s vs {p['psi_s']:.0f} s; load average {load0:.1f} at start, "
        f"{load1:.1f} at end"
    )
    title = (
        f"SuperLink + {len(r['parties'])} SuperNodes over TLS, {r['job']['iterations']} iterations"
    )
    return title, text


def bench_psi(r: Result) -> Row:
    m, s = r["main"], r["summary"]
    t = s["target"]
    anchors = ", ".join(f"{k} ~{_n(v)}" for k, v in s["anchors_rows_per_s_per_core"].items())
    goal = (
        f"goal {t['goal']}: {met(t['met'])}"
        if t["applies"]
        else f"goal ({t['goal']}) not tested at this size"
    )
    us = r["calibration"]["module_us_per_mult_one_core"]
    scaling = ", ".join(
        f"{x['parties']} x {_n(x['n_per_party'])}: {x['seconds']['wall']:.1f} s"
        for x in r["results"][1:]
    )
    correct = all(x["correct"] for x in r["results"])
    text = (
        f"{m['seconds']['wall']:.1f} s end to end, {'exact' if correct else '**wrong result**'}; "
        f"{_n(m['rows_per_s_per_core'])} rows/s per core ({anchors}); {goal}; the floor is "
        f"{_n(m['scalar_mults'])} X25519 multiplications x {us:.1f} us / {m['cores_used']} "
        f"cores = {s['floor_seconds']:.3g} s (docs/vertical.md); scaling: {scaling}"
    )
    title = (
        f"{m['parties']} x {_n(m['n_per_party'])} ids, {m['overlap']:.0%} overlap, all parties here"
    )
    return title, text


def bench_psi_oprf(r: Result) -> Row:
    main, t, side = r["results"][0], r["target"], r["side_by_side"]
    s = main["seconds"]
    goal = f"goal {t['goal']}: {met(t['met'])}" if t["applies"] else "goal not tested at this size"
    text = (
        f"{s['wall']:.1f} s end to end ({main['cpu_seconds']:.1f} s CPU), "
        f"{'exact' if main['correct'] else '**wrong result**'}; {goal}; phases: hashing "
        f"{s['hash_ids']:.1f} s, {main['params']['w']} base OTs {s['base_ot']:.2f} s, matrix "
        f"{s['matrix']:.1f} s, OPRF values {s['sender_oprf']:.1f} s, check "
        f"{s['receiver_check']:.1f} s; messages: matrix {_n(main['message_bytes']['matrix'])} B, "
        f"values {_n(main['message_bytes']['values'])} B; side by side at "
        f"{_n(side['n_per_party'])} x {_n(side['n_per_party'])}: the ECDH ring takes "
        f"{side['ecdh_wall_over_oprf_wall']:.1f}x the wall time "
        f"({side['ecdh_cpu_over_oprf_cpu']:.1f}x the CPU); used by vertical jobs with "
        f'`vertical.psi = "cm20"` (leakage: docs/vertical.md)'
    )
    title = (
        f"CM20, 2 x {_n(main['n_per_party'])} ids, {main['overlap']:.0%} overlap, both parties here"
    )
    return title, text


def scale_simulation(r: Result) -> Row:
    runs = r["runs"]
    text = "; ".join(
        f"{x['partners']} partners: {x['wall_time_s']:.1f} s wall time, "
        f"{_n(x['peak_rss_mib'])} MiB peak resident memory, test AUC {x['test_auc']:.4f}, "
        f"load {x['load_average_at_start'][0]:.0f} → {x['load_average_at_end'][0]:.0f}"
        for x in runs
    )
    text += " (Ray included; each size in its own process)"
    sizes = " and ".join(str(x["partners"]) for x in runs)
    return f"{sizes} virtual partners, {runs[0]['rounds']} rounds", text


def scale_deployment(r: Result) -> Row:
    d, ref = r["deployment"], r["reference"]
    jobs = []
    for aggregation, j in d["jobs"].items():
        if j["status"] != "completed":
            end = j.get("end", {})
            steps = sorted({str(x.get("step")) for x in end.get("dropouts", [])})
            jobs.append(
                f"{aggregation}: **failed**, {end.get('error', '?')}: "
                f"{len(end.get('dropouts', []))} partners dropped at {', '.join(steps) or '-'} "
                f"({(end.get('dropouts') or [{}])[0].get('reason', '?')})"
            )
            continue
        jobs.append(
            f"{aggregation}: completed, median round {j['median_round_s']:.1f} s, job "
            f"{j['job_wall_time_s']:.0f} s, test AUC {j['test_auc']:.4f}"
        )
    text = (
        f"all {d['partners']} nodes online after {d['all_nodes_online_s']:.0f} s; "
        + "; ".join(jobs)
        + f" (the same job on the demo's {ref['partners']} Region partners in the simulation "
        + (
            f"engine: {ref['test_auc']:.4f}"
            if ref.get("test_auc") is not None
            else f"engine: **failed**, {ref.get('error', '?')}"
        )
        + f"); peak resident memory of all processes "
        f"{_n(d['peak_rss_mib'])} MiB; {d['processes_left_after_stop']} processes left after "
        f"the stop; load average {r['load_average_at_start'][0]:.0f} at start, "
        f"{r['load_average_at_end'][0]:.0f} at end"
    )
    title = (
        f"SuperLink over TLS + {d['partners']} SuperNodes on 2 cores, "
        f"{r['job']['rounds']} rounds, CKKS"
    )
    return title, text


def bench_audit(r: Result) -> Row:
    text = (
        f"{_n(r['append_single_per_s'])} durable single appends/s, "
        f"{_n(r['append_concurrent_16_threads_per_s'])}/s from 16 threads; export "
        f"{r['export_s']:.1f} s + offline verification {r['verify_s']:.1f} s "
        f"({r['verify_cpu_per_event_us']:.0f} us CPU per event); bundle {r['bundle_mb']:.0f} MB"
    )
    target = r.get("target")
    if target is not None:
        goal = f"goal {target['goal']}: " + (
            met(target["met"]) if target["applies"] else "not tested at this size"
        )
        text += (
            f"; {goal}. {_n(r['checkpoint_authenticated_events'])} of the events (the log's "
            f"own) authenticated by the signed checkpoints; one Ed25519 verification per event "
            f"would take {r['ed25519_floor_now_s']:.1f} s on {r['workers']} cores at this run's "
            f"load ({r['ed25519_verify_wall_us']:.0f} us wall, {r['ed25519_verify_cpu_us']:.0f} "
            f"us CPU each): export + verification took "
            f"{r['export_plus_verify_over_floor_now']:.2f}x that"
        )
        if "verify_all_signatures_s" in r:
            text += f"; verifying every event signature too: {r['verify_all_signatures_s']:.1f} s"
    whose = "the log's own" if r.get("actors") == "own" else "by 4 other parties"
    return f"{_n(r['events'])} signed events, {whose}", text


ROWS: dict[str, Callable[[Result], Row]] = {
    f.__name__: f
    for f in (
        horizontal, he_equivalence, kmeans_modes, bench_he, bench_secagg, bench_he_deployment,
        bench_deployment, privacy_utility, vertical,
        bench_vertical_deployment, bench_psi, bench_psi_oprf, scale_simulation, scale_deployment,
        bench_audit,
    )
}  # fmt: skip
