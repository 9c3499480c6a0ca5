localrules:
    report,


rule report:
    input:
        markers=[preflight_marker(v) for v in VOICES],
        manifests=[manifest_path(v) for v in VOICES],
    output:
        report=PATHS["report"],
    params:
        voices=lambda wildcards: [vars(v) for v in voice_files()],
    log:
        f"{LOGS}/report/report.log",
    threads: 1
    resources:
        mem_mb=200,
    conda:
        "../envs/audio.yaml"
    script:
        "../scripts/report.py"
