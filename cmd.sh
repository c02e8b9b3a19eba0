# How run.sh runs its parallel jobs (Kaldi's convention): every job goes through
#   $cmd JOB=1:N LOG COMMAND
# and the queue script decides where it runs. Edit here, or pass --cmd to run.sh.
#
#   utils/run.pl    this machine (default; --max-jobs-run caps the concurrency)
#   utils/slurm.pl  a Slurm cluster (partition, account, gres in conf/slurm.conf)
#   utils/queue.pl  Sun/Open Grid Engine (options in conf/queue.conf)
#
# On a Slurm cluster, for example:
#   cmd="utils/slurm.pl --config conf/slurm.conf --mem 4G"
#   train_cmd="utils/slurm.pl --config conf/slurm.conf --mem 16G --gpu 1"
cmd="utils/run.pl"
train_cmd="utils/run.pl"
