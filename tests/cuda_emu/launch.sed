# The one rewrite the CUDA emulation (emu.h) needs, applied to a whole .cu file (sed -z -E):
#   k<<<grid, block, smem, stream>>>(args)  ->  emu::launch_cfg("k", grid, block, smem, stream)(k, args)
# (k may carry template arguments), and extern __shared__ arrays become the launch's dynamic buffer.
s/([A-Za-z_][A-Za-z0-9_:]*(<[^<>;]*>)?)[[:space:]]*<<<([^;]*)>>>[[:space:]]*\([[:space:]]*\)/emu::launch_cfg("\1", \3)(\1)/g
s/([A-Za-z_][A-Za-z0-9_:]*(<[^<>;]*>)?)[[:space:]]*<<<([^;]*)>>>[[:space:]]*\(/emu::launch_cfg("\1", \3)(\1, /g
s/extern[[:space:]]+__shared__[[:space:]]+([^;]*[^[:space:]])[[:space:]]+([A-Za-z_][A-Za-z0-9_]*)[[:space:]]*\[[[:space:]]*\][[:space:]]*;/\1 *const \2 = (\1 *)emu::dyn_smem();/g
