localrules:
    report,


rule report:
    input:
        markers=[preflight_marker(v) for v in VOICES],
        manifests=[manifest_path(v) for v in VOICES],
        statuses=[status_path(v) for v in VOICES],
        checkpoints=[checkpoint_path(v) for v in VOICES],
        samples=[p for v in VOICES for p in sample_paths(v)],
        evaluations=[evaluation_path(v) for v in VOICES],
    output:
        report=report(
            PATHS["report"],
            caption="report/report_block.rst",
            category="Report",
            labels={"file": "COLAB TRAIN REPORT block"},
        ),
        summary=report(
            f"{Path(PATHS['report']).parent}/summary.html",
            caption="report/summary.rst",
            category="Report",
            labels={"file": "run summary (dataset, training, voice similarity)"},
        ),
    log:
        f"{LOGS}/report/report.log",
    conda:
        "../envs/audio.yaml"
    threads: 1
    resources:
        mem_mb=200,
    params:
        voices=lambda wildcards: [vars(v) for v in voice_files()],
    script:
        "../scripts/report.py"
